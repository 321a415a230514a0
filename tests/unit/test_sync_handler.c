/* test_sync_handler.c — POST /v1/sync as a function: request bytes in,
 * status and response bytes out, with the Redis call and the wall clock
 * replaced by mocks (-Wl,--wrap). Checks what reaches Redis (KEYS/ARGV
 * exactly), what the edge gets back (decoded with protobuf-c), and the
 * degraded answer when Redis fails.
 */
// test-ldflags: -Wl,--wrap=co_redis_eval_sync -Wl,--wrap=co_wall_ms
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

#define NOW_MS 1700000000123ULL

static const char policy_json[] =
    "{\"version\": 3, \"sync_interval_ms\": 5000, \"clearance_ttl_s\": 60,"
    " \"expected_edges\": 4, \"quotas\": ["
    "  {\"name\": \"per-ip\", \"key\": \"ip\", \"limit\": 100,"
    "   \"window_s\": 60, \"action\": \"challenge\", \"floor\": 10},"
    "  {\"name\": \"login\", \"key\": \"ip\", \"limit\": 10, \"window_s\": 30,"
    "   \"path_prefix\": \"/login\", \"methods\": [\"POST\"],"
    "   \"action\": \"deny\", \"deny_after\": 3, \"fail_open\": false}]}";

/* ------------------------------------------------------------ mocks */
int __wrap_co_redis_eval_sync(const struct co_script_call *call,
                              long long *out, size_t nout, char *err,
                              size_t errlen);
uint64_t __wrap_co_wall_ms(void);

static struct {
    int calls;
    size_t nkeys, nargs;
    char **argv;             /* copies, NUL-terminated */
    size_t *lens;
    size_t nout;
} seen;
static int mock_rc;
static long long mock_reply[64];

static void seen_clear(void)
{
    for (size_t i = 0; seen.argv != NULL && i < seen.nkeys + seen.nargs; i++)
        free(seen.argv[i]);
    free(seen.argv);
    free(seen.lens);
    memset(&seen, 0, sizeof seen);
}

int __wrap_co_redis_eval_sync(const struct co_script_call *call,
                              long long *out, size_t nout, char *err,
                              size_t errlen)
{
    size_t n = call->nkeys + call->nargs;

    seen_clear();
    seen.calls = 1;
    seen.nkeys = call->nkeys;
    seen.nargs = call->nargs;
    seen.nout = nout;
    seen.argv = calloc(n, sizeof *seen.argv);
    seen.lens = calloc(n, sizeof *seen.lens);
    for (size_t i = 0; i < n; i++) {
        seen.argv[i] = calloc(1, call->argvlen[i] + 1);
        memcpy(seen.argv[i], call->argv[i], call->argvlen[i]);
        seen.lens[i] = call->argvlen[i];
    }
    if (mock_rc != CO_OK) {
        snprintf(err, errlen, "mocked failure");
        return mock_rc;
    }
    assert_true(nout <= sizeof mock_reply / sizeof mock_reply[0]);
    memcpy(out, mock_reply, nout * sizeof *out);
    return CO_OK;
}

uint64_t __wrap_co_wall_ms(void)
{
    return NOW_MS;
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

static void run(const uint8_t *body, size_t len, struct co_response *resp)
{
    struct co_request req = {
        .method = "POST", .path = "/v1/sync",
        .content_type = "application/x-protobuf",
        .body = body, .body_len = len,
    };

    memset(resp, 0, sizeof *resp);
    co_sync_handle(&req, resp);
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

    run(body, len, &resp);
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
    memset(co_server.secret, 0x5a, 32);
    co_server.secret_len = 32;
    atomic_store(&co_log_min_level, CO_LOG_ERROR + 1);  /* quiet */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    co_policy_install(NULL);
    seen_clear();
    return 0;
}

static int reset_mock(void **state)
{
    (void)state;
    seen_clear();
    mock_rc = CO_OK;
    memset(mock_reply, 0, sizeof mock_reply);
    return 0;
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
    const char *want[] = {
        "tg:{per-ip|1.2.3.4}:c", "tg:{per-ip|1.2.3.4}:e",
        "tg:{login|a%7Bb%7D%7Cc%25d}:c", "tg:{login|a%7Bb%7D%7Cc%25d}:e",
        "1700000000123", "edge-7", "2",
        "100", "60000", "1", "0", "5", "8",
        "10", "30000", "2", "3000", "2", "5",
    };
    const long long reply[] = {0, 40, 30000, 55, 2, 0, 1234, 12};
    Tollgate__V1__SyncResponse *r;

    (void)state;
    memcpy(mock_reply, reply, sizeof reply);
    r = run_ok("edge-7", 7, 0, kcs, 3);
    assert_int_equal(seen.calls, 1);
    assert_int_equal(seen.nkeys, 4);
    assert_int_equal(seen.nargs, 15);
    assert_int_equal(seen.nout, 8);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
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
    assert_int_equal(co_challenge_check(co_server.secret,
                                        co_server.secret_len, tok,
                                        strlen(tok), NOW_MS / 1000, &claims),
                     CO_OK);
    assert_string_equal(claims.quota, "per-ip");
    assert_int_equal(claims.issued_at_s, NOW_MS / 1000);
    assert_int_equal(claims.expires_at_s, NOW_MS / 1000 + CO_CHALLENGE_TTL_S);
    co_challenge_key_hash(co_server.secret, co_server.secret_len, "per-ip",
                          "203.0.113.7", 11, want_hash);
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
    assert_state(r->states[0], "per-ip", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 10, 0, 0);
    assert_state(r->states[1], "nosuch", "x",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 0, 0, 0);
    assert_state(r->states[2], "login", "1.2.3.4",
                 TOLLGATE__V1__ACTION__ACTION_ALLOW, 2, 0, 0);
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
    assert_int_equal(r->states[0]->lease, 10);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

static void test_unknown_quotas_only_skip_redis(void **state)
{
    const struct kc_spec kcs[] = {
        {"gone", "1.2.3.4", 5, 0, 0},
        {"also-gone", "5.6.7.8", 1, 1, 1},
    };
    Tollgate__V1__SyncResponse *r;

    (void)state;
    mock_rc = CO_EREDIS;     /* would degrade, if it were called */
    r = run_ok("e1", 5, 3, kcs, 2);
    assert_int_equal(seen.calls, 0);
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
    assert_int_equal(seen.calls, 0);
    assert_int_equal(r->acked_seq, 1);
    assert_int_equal(r->n_states, 0);
    assert_non_null(r->policy);
    tollgate__v1__sync_response__free_unpacked(r, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_malformed_protobuf_is_400, reset_mock),
        cmocka_unit_test_setup(test_invalid_fields_are_400, reset_mock),
        cmocka_unit_test_setup(test_too_many_counts_is_400, reset_mock),
        cmocka_unit_test_setup(test_batch_reaches_redis_as_one_call,
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
        cmocka_unit_test_setup(test_unknown_quotas_only_skip_redis,
                               reset_mock),
        cmocka_unit_test_setup(test_empty_batch_is_acked, reset_mock),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
